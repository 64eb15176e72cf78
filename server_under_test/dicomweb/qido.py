"""QIDO-RS: a search's query parameters become a C-FIND identifier, matched by services.query, answered as JSON.

The matching (universal, single value, wildcards, date and time ranges, UID lists) is C-FIND's: the
parameters are turned into the match keys build_query reads, and its SQL gets limit and offset. Rows
become DICOM JSON (PS3.18 F.2) with each attribute's VR from pydicom's dictionary, written as text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from server_under_test.services.query import ATTRIBUTES, IMAGE, RANK, SERIES, STUDY, build_query

MAX_RESULTS = 10_000  # without a limit; a PS3.18 8.3.4.6 Warning header says when more would match
CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}

# The attributes every match returns (PS3.18 table 10.6.3-3, -4, -5, as far as the index holds them),
# and the UIDs a result's RetrieveURL needs.
DEFAULT_KEYS = {
    STUDY: [
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ],
    SERIES: [
        "StudyInstanceUID",
        "Modality",
        "SeriesDescription",
        "SeriesNumber",
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
    ],
    IMAGE: [
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "NumberOfFrames",
    ],
}
NUMBERS = {"IS", "US", "UL", "SL", "SS"}
RETRIEVE_URL = "00081190"
URL_KEYS = {STUDY: ["StudyInstanceUID"], SERIES: ["StudyInstanceUID", "SeriesInstanceUID"]}
URL_KEYS[IMAGE] = [*URL_KEYS[SERIES], "SOPInstanceUID"]
URL_PARTS = {STUDY: ["studies"], SERIES: ["studies", "series"], IMAGE: ["studies", "series", "instances"]}


class SearchError(ValueError):
    """A parameter cannot be answered (400): the message names it."""


@dataclass(frozen=True)
class MatchKey:
    """One element of the identifier build_query reads: a keyword, its VR and the value to match."""

    keyword: str
    VR: str
    value: str


@dataclass(frozen=True)
class Search:
    level: str
    keys: dict[str, str]  # keyword -> value to match ('' returns it only)
    limit: int
    offset: int


def _keyword(name: str) -> str:
    """A parameter's attribute: a keyword, or a tag as 8 hex digits."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        name = keyword_for_tag(int(name, 16)) or name
    attribute = ATTRIBUTES.get(name)
    if attribute is None:
        raise SearchError(f"{name!r} is not an attribute this archive searches on")
    return name


def _count(params: list[tuple[str, str]], name: str, default: int) -> int:
    values = [v for k, v in params if k == name]
    if not values:
        return default
    if not values[-1].isdigit():
        raise SearchError(f"{name} must be a whole number, got {values[-1]!r}")
    return int(values[-1])


def parse(level: str, params: list[tuple[str, str]], fixed: dict[str, str]) -> Search:
    """The search a request asks for: `params` from its query string, `fixed` the UIDs in its path."""
    keys = {k: "" for k in DEFAULT_KEYS[level]}
    for name, value in params:
        if name == "includefield":
            for field in (f.strip() for f in value.split(",") if f.strip()):
                if field == "all":
                    keys.update({k: "" for k, a in ATTRIBUTES.items() if RANK[a.level] <= RANK[level]} | keys)
                else:
                    keys.setdefault(_keyword(field), "")
        elif name not in CONTROL:
            keys[_keyword(name)] = value
    for keyword, value in fixed.items():
        keys[keyword] = value
    for keyword in keys:
        if RANK[ATTRIBUTES[keyword].level] > RANK[level]:
            raise SearchError(f"{keyword} is not an attribute of the {level.lower()} level")
    limit = min(_count(params, "limit", MAX_RESULTS), MAX_RESULTS)
    return Search(level, keys, limit, _count(params, "offset", 0))


def identifier(search: Search) -> list[MatchKey]:
    """The keys in tag order, as a C-FIND identifier lists them."""
    ordered = sorted(search.keys.items(), key=lambda item: tag_for_keyword(item[0]))
    return [MatchKey(k, dictionary_VR(k), v) for k, v in ordered]


def run(db, search: Search, base_url: str) -> tuple[bytes, int, bool]:
    """The matches as a DICOM JSON array, how many, and whether more would follow past the limit.

    The SQL is C-FIND's exactly: with LIMIT in it, SQLite may walk the study table in key order rather
    than use the date or name index (measured: a week of XA in 20,000 studies, 3x slower), so the
    offset and the limit are applied to the rows as they come.
    """
    sql, params, keywords = build_query(identifier(search), search.level)
    cursor = db.execute(sql, params)
    rows = list(islice(cursor, search.offset, search.offset + search.limit + 1))
    cursor.close()
    more = len(rows) > search.limit
    rows = rows[: search.limit]
    return JsonWriter(keywords, search.level, base_url).matches(rows), len(rows), more


def _text(value: str) -> str:
    """A JSON string: written directly when it needs no escaping (almost every indexed value)."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


def _values(vr: str, value) -> str:
    """The element's "Value" array as JSON text, or '' for an empty element."""
    if value is None or value == "":
        return ""
    if isinstance(value, int):
        return f"[{value}]"
    parts = str(value).split("\\")
    if vr == "PN":
        return "[" + ",".join('{"Alphabetic":' + _text(p) + "}" for p in parts) + "]"
    if vr in NUMBERS:
        try:
            return "[" + ",".join(str(int(p)) for p in parts) + "]"
        except ValueError:
            return ""  # an IS the sender filled with text: returned empty rather than wrong
    return "[" + ",".join(_text(p) for p in parts) + "]"


class JsonWriter:
    """The matches of one search as DICOM JSON text (PS3.18 F.2), written directly: what is the same for
    every match (each element's tag and VR, their order) is worked out once (as C-FIND's IdentifierEncoder)."""

    def __init__(self, keywords: list[str], level: str, base_url: str):
        columns = {keyword: i for i, keyword in enumerate(keywords)}
        elements = [(f"{tag_for_keyword(k):08X}", dictionary_VR(k), columns[k]) for k in keywords]
        self.elements = sorted([*elements, (RETRIEVE_URL, "UR", -1)])
        self.url_columns = [columns[k] for k in URL_KEYS[level]]
        self.url_parts = URL_PARTS[level]
        self.base_url = base_url

    def match(self, row: tuple) -> str:
        fields = []
        for tag, vr, column in self.elements:
            if column < 0:
                url = self.base_url + "".join(f"/{part}/{row[c]}" for part, c in zip(self.url_parts, self.url_columns))
                fields.append(f'"{tag}":{{"vr":"UR","Value":[{_text(url)}]}}')
                continue
            values = _values(vr, row[column])
            fields.append(f'"{tag}":{{"vr":"{vr}","Value":{values}}}' if values else f'"{tag}":{{"vr":"{vr}"}}')
        return "{" + ",".join(fields) + "}"

    def matches(self, rows: list[tuple]) -> bytes:
        return ("[" + ",".join(self.match(row) for row in rows) + "]").encode()
