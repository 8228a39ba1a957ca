from __future__ import annotations

import pytest
from program_scripts import write_scripts


@pytest.fixture
def project(tmp_path):
    """A folder holding the two stand-in scripts, as a student's repository would."""
    return write_scripts(tmp_path / "project")
