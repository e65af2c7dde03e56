"""The release catalogue (data) and the tools that publish it."""
