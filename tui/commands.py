"""The command palette's entries: every panel action by name, from the keys table."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from .keys import ACTIONS


class PanelCommands(Provider):
    def _entries(self):
        for action in ACTIONS:
            title = f"{action.help} ({action.label})"
            yield title, partial(self.app.run_action, action.action), action.help

    async def discover(self) -> Hits:
        for title, run, help_text in self._entries():
            yield DiscoveryHit(title, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, run, help_text in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), run, help=help_text)
