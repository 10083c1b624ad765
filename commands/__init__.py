"""One module per command: a pure plan and an execute step that walks it through ports."""
