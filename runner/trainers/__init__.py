"""One module per trainer: pure functions from a resolved job to that trainer's files and argv."""
