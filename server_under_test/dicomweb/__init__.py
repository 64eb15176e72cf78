"""DICOMweb (PS3.18) on the archive's storage and index: STOW-RS, QIDO-RS and WADO-RS over aiohttp.

app: the routes, bounds and the server each worker runs on the shared DICOMweb socket; stow: parts of a
multipart/related request into the same durable write as C-STORE; qido: searches through C-FIND's matching;
wado: instances, metadata and frames out of the stored files.
"""
