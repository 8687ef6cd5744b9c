"""One module per CLI command; each imports heavy dependencies only inside its function."""
