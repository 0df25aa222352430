"""Configuration: the declared keys with their checks, and the loader of the INI file."""
