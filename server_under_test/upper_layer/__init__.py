"""The DICOM upper layer on plain sockets: PDUs, association set-up on both sides, DIMSE command
sets and statuses. The one implementation: the archive serves with it, the harness (bench.dicom)
sends and receives with it."""
