"""The command palette's entries: every panel action by name, from the keys table."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from .keys import ACTIONS


class PanelCommands(Provider):
    """One line per action: its help and key. (A help line under it repeated the same words,
    so every command looked listed twice.)"""

    def _entries(self):
        for action in ACTIONS:
            yield f"{action.help} ({action.label})", partial(self.app.run_action, action.action)

    async def discover(self) -> Hits:
        for title, run in self._entries():
            yield DiscoveryHit(title, run)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, run in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), run)
