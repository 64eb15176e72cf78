"""pacsbench: a DICOM archive benchmark (synthetic DSA studies, locust load, reports)."""

__version__ = "0.1.0"
