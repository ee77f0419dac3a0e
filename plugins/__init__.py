"""First-party plugins, each loaded through the `toolkit` entry-point group like any other."""
