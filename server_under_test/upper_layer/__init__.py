"""The DICOM upper layer on plain sockets: PDUs, association set-up on both sides, DIMSE command sets."""
