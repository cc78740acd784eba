"""Choosing a model on a small catalog: cross-validation folds by group (``folds``), the
candidates ``auto`` considers (``candidates``), their out-of-fold fits (``crossval``) and the
budgeted search with early elimination that picks the winner (``search``)."""
