"""``maskloss scan``: the linter for the Keras code patterns behind a misreported masked loss.
It reads sources with libcst and never imports Keras or the code it reads (see README)."""
