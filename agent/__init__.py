"""The Allworx upgrade agent: what runs on a server (a lab box or a virtual one)."""

__version__ = "0.1.0"
