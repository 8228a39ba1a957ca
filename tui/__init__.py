"""ctui's Textual control panel. Textual is imported by the app modules only, not here."""
