"""One module per source. ``build`` turns the configuration into the enabled collectors."""
