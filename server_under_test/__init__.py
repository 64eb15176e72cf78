"""The pacsbench reference archive: a DICOM Storage SCP with a durable store and a SQLite index.

It imports nothing from `bench` so it can be installed alone (for example inside a VM guest).
"""

__version__ = "0.1.0"
