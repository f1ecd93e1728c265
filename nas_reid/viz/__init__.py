"""Pictures shared by the CLI and the notebooks (contact sheets, plots)."""
