"""DIMSE services over the upper layer: one association's dispatch, C-STORE, C-FIND, C-MOVE/C-GET, the header
scanner."""
