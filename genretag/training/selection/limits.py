"""auto's defaults, torch-free (the CLI shows them in ``train --help`` without loading torch)."""

#: Below this many validation tracks ``auto`` chooses by cross-validation over training +
#: validation (one split's validation cannot rank models: ±10 points at 95 % on 40 tracks).
CV_BELOW = 200
#: Cross-validation folds (fold k test, k+1 validation, the others training).
DEFAULT_FOLDS = 5
#: Seconds ``auto``'s cross-validated choice may take, refit included (issue 32: ≤ 240 s for
#: ~250 clips on 2 CPU cores with an empty cache).
DEFAULT_BUDGET = 240.0
