"""The fleet operator's side: signed commands and the live view of servers (``allworx-fleet``)."""
