"""One module per screen, each with a sibling `.tcss` file holding its layout."""
