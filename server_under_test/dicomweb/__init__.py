"""DICOMweb (PS3.18) on the archive's storage and index: STOW-RS, QIDO-RS and WADO-RS over aiohttp.

app: the routes, bounds and the server each worker runs on the shared DICOMweb socket; body: where a STOW-RS
body's bytes come from (the socket, taken over from aiohttp, or aiohttp's stream); multipart: its parts split
in the storing threads, straight into the staging buffers; parts: a request's parts, each read and stored by a
thread of its own; stow: one part into the same durable write as C-STORE, and the response; qido: searches
through C-FIND's matching; wado: instances, metadata and frames out of the stored files.
"""
