"""One row per finished epoch: the figures to compare after changing workers or batch size."""

from __future__ import annotations

from rich.segment import Segment
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ctui.engine.events import EpochEnded

COLUMNS = ("epoch", "train s", "eval s", "samples/s", "wait", "loss", "acc", "bs", "wk")
MAX_TASK_COLUMNS = 3  # the task's own figures (f1, iou...) after these; the rest are logged
NOT_KNOWN = "–"  # not evaluated this epoch (--val-every), or not reported by the task


def epoch_row(event: EpochEnded, figures: tuple[str, ...] = ()) -> tuple[Text, ...]:
    accuracy = "n/a" if event.test_accuracy is None else f"{event.test_accuracy:.2%}"
    loss = NOT_KNOWN if event.test_loss is None else f"{event.test_loss:.4f}"
    changed = "*" if event.settings_changed else ""
    own = dict(event.metrics)
    cells = (f"{event.epoch}", f"{event.train_seconds:.2f}", f"{event.eval_seconds:.2f}",
             f"{event.samples_per_second:,.0f}", f"{event.data_wait_fraction:.0%}",
             loss, accuracy, f"{event.batch_size}{changed}", f"{event.num_workers}{changed}",
             *(f"{own[name]:.4g}" if name in own else NOT_KNOWN for name in figures))
    return tuple(Text(cell, justify="right") for cell in cells)


def task_figures(epochs: list[EpochEnded]) -> tuple[str, ...]:
    """The task's own figures to give columns: evaluation's first (they judge the model)."""
    names: dict[str, None] = {}
    for event in epochs:
        names.update(dict.fromkeys(name for name, _ in event.metrics))
    ordered = sorted(names, key=lambda name: name.startswith("train_"))
    return tuple(ordered[:MAX_TASK_COLUMNS])


class EpochTable(ScrollView, can_focus=True):
    """A row per finished epoch, drawn line by line (Textual's line API): a new epoch formats
    its own row; the rows already shown stay as they were. (A DataTable renders every visible
    cell again for each row added: on a run of short epochs that was a third of the panel's
    CPU time, which it takes from the training.) The header stays in place; the cursor follows
    the newest epoch until the user moves it up (up/down, page up/down, home/end)."""

    COMPONENT_CLASSES = {"epoch-table--header", "epoch-table--even-row", "epoch-table--cursor"}
    DEFAULT_CSS = """
    EpochTable {
        background: $surface;
        color: $foreground;
        &:focus { background-tint: $foreground 5%; }
        & > .epoch-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .epoch-table--even-row { background: $surface-lighten-1 50%; }
        &:dark > .epoch-table--even-row { background: $surface-darken-1 40%; }
        & > .epoch-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .epoch-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    BINDINGS = [Binding("up", "cursor(-1)", show=False), Binding("down", "cursor(1)", show=False),
                Binding("pageup", "page(-1)", show=False),
                Binding("pagedown", "page(1)", show=False),
                Binding("home", "cursor(-1_000_000)", show=False),
                Binding("end", "cursor(1_000_000)", show=False)]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "Epochs"
        self._shown: list[EpochEnded] = []
        self._figures: tuple[str, ...] = ()
        self._cells: list[tuple[Text, ...]] = []
        self._widths: list[int] = [len(label) for label in COLUMNS]
        self._lines: list[str] = []  # each row's text at the current widths
        self._header = ""
        self.cursor_row = -1  # no row yet
        self._follow = True  # the cursor stays on the newest epoch
        self._format_all()

    # ------------------------------------------------------------ what the app calls

    @property
    def row_count(self) -> int:
        return len(self._cells)

    @property
    def column_labels(self) -> tuple[str, ...]:
        return (*COLUMNS, *self._figures)

    def get_row_at(self, row: int) -> tuple[Text, ...]:
        return self._cells[row]

    def show_epochs(self, epochs: list[EpochEnded]) -> None:
        if epochs == self._shown:
            return
        figures = task_figures(epochs)
        if epochs[: len(self._shown)] != self._shown or figures != self._figures:
            # a resume replaced epochs, or the task's figures changed: start over
            self._figures, self._shown = figures, []
            self._cells, self._widths = [], [len(label) for label in self.column_labels]
            self._format_all()
        for event in epochs[len(self._shown):]:
            cells = epoch_row(event, figures)
            self._cells.append(cells)
            wider = [max(width, cell.cell_len)
                     for width, cell in zip(self._widths, cells, strict=True)]
            if wider != self._widths:
                self._widths = wider
                self._format_all()
            else:
                self._lines.append(self._format(cells))
        self._shown = list(epochs)
        if self._follow:
            self.cursor_row = self.row_count - 1
        self._set_virtual_size(Size(sum(self._widths) + 2 * len(self._widths),
                                    self.row_count + 1))
        self.refresh()
        if self._follow:
            # now, so the new row and the scroll are one frame; and after the next refresh,
            # when a scrollbar appearing changed the room for rows (a no-op otherwise)
            self._show_cursor()
            self.call_after_refresh(self._show_cursor)

    def _set_virtual_size(self, size: Size) -> None:
        """The scrollable size, without the layout of the whole screen that setting
        `virtual_size` asks for (for widgets sized by their content; this one is sized by the
        stylesheet): what Textual itself does for a size change that needs no layout. A
        scrollbar appearing or going still asks for one, through its own reactive."""
        if size != self.virtual_size:
            self.set_reactive(ScrollView.virtual_size, size)
            self._scroll_update(size)

    # ------------------------------------------------------------ drawing

    def _format(self, cells: tuple[Text, ...]) -> str:
        return "".join(f" {cell.plain:>{width}} "
                       for cell, width in zip(cells, self._widths, strict=True))

    def _format_all(self) -> None:
        labels = self.column_labels
        self._header = "".join(f" {label:>{width}} "
                               for label, width in zip(labels, self._widths, strict=True))
        self._lines = [self._format(cells) for cells in self._cells]

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        base = self.rich_style
        if y == 0:
            text, component = self._header, "epoch-table--header"
        else:
            row = scroll_y + y - 1
            if row >= len(self._lines):
                return Strip.blank(width, base)
            text = self._lines[row]
            component = "epoch-table--cursor" if row == self.cursor_row else \
                "epoch-table--even-row" if row % 2 else ""
        style = base + self.get_component_rich_style(component) if component else base
        return Strip([Segment(text, style)]).crop_extend(scroll_x, scroll_x + width, style)

    # ------------------------------------------------------------ keys

    def _body_height(self) -> int:
        return max(self.scrollable_content_region.height - 1, 1)

    def _show_cursor(self) -> None:
        """Scroll so the cursor's row is in view below the header."""
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + self._body_height():
            self.scroll_to(y=self.cursor_row - self._body_height() + 1, animate=False,
                           immediate=True)

    def action_cursor(self, rows: int) -> None:
        if not self._cells:
            return
        self.cursor_row = min(max(self.cursor_row + rows, 0), self.row_count - 1)
        self._follow = self.cursor_row == self.row_count - 1
        self._show_cursor()
        self.refresh()

    def action_page(self, pages: int) -> None:
        self.action_cursor(pages * self._body_height())
