"""QIDO-RS: a search's query parameters become a C-FIND identifier, matched by services.query, answered as JSON.

The matching (universal, single value, wildcards, date and time ranges, UID lists) is C-FIND's: the
parameters are turned into the match keys build_query reads, and its SQL gets limit and offset. Rows
become DICOM JSON (PS3.18 F.2) with each attribute's VR from pydicom's dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
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


def run(db, search: Search) -> tuple[list[dict], bool]:
    """The matches (keyword -> value), and whether more would follow past the limit.

    The SQL is C-FIND's exactly: with LIMIT in it, SQLite may walk the study table in key order rather
    than use the date or name index (measured: a week of XA in 20,000 studies, 3x slower), so the
    offset and the limit are applied to the rows as they come.
    """
    sql, params, keywords = build_query(identifier(search), search.level)
    cursor = db.execute(sql, params)
    rows = list(islice(cursor, search.offset, search.offset + search.limit + 1))
    cursor.close()
    more = len(rows) > search.limit
    return [dict(zip(keywords, row)) for row in rows[: search.limit]], more


def _json_value(vr: str, value) -> list | None:
    if value is None or value == "":
        return None
    if vr == "PN":
        return [{"Alphabetic": v} for v in str(value).split("\\")]
    if vr in NUMBERS:
        try:
            return [int(v) for v in str(value).split("\\")]
        except ValueError:
            return None  # an IS the sender filled with text: returned empty rather than wrong
    return [v for v in str(value).split("\\")]


@cache
def _json_key(keyword: str) -> tuple[str, str]:
    """The attribute's tag as DICOM JSON writes it, and its VR (looked up once: every match asks)."""
    return f"{tag_for_keyword(keyword):08X}", dictionary_VR(keyword)


def to_json(match: dict, level: str, base_url: str) -> dict:
    """One match as a DICOM JSON object, with its RetrieveURL."""
    result = {}
    for keyword, value in match.items():
        tag, vr = _json_key(keyword)
        element = {"vr": vr}
        json_value = _json_value(vr, value)
        if json_value is not None:
            element["Value"] = json_value
        result[tag] = element
    url = f"{base_url}/studies/{match['StudyInstanceUID']}"
    if level in (SERIES, IMAGE):
        url += f"/series/{match['SeriesInstanceUID']}"
    if level == IMAGE:
        url += f"/instances/{match['SOPInstanceUID']}"
    result["00081190"] = {"vr": "UR", "Value": [url]}
    return dict(sorted(result.items()))
