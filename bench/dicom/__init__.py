"""The harness's DICOM side: client associations (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET), its Storage SCP, arrivals."""
