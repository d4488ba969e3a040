"""One module per procedure step; `registry` registers them once, in the walkthrough's order."""
