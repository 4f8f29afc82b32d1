"""Remote hosts: their list, SSH connections (the remote Shell), file sync and image transfer."""
