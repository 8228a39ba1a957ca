"""`ctui serve`: the control panel in a browser, behind a token (textual-serve underneath)."""
