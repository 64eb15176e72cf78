"""The acceptor's negotiation, driven by pynetdicom as a real requestor over TCP."""

import socket
import threading

import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification, XRayAngiographicImageStorage

from server_under_test.services.connection import supported_contexts
from server_under_test.upper_layer.association import AssociationRejected, NegotiationCache, accept
from server_under_test.upper_layer.pdu import Wire

ECHO_ONLY = [(Verification, [ExplicitVRLittleEndian])]  # a proposal of Verification alone


@pytest.fixture(scope="module")
def supported():
    return supported_contexts()


def _associate(
    supported,
    cache,
    proposals,
    calling="MODALITY",
    allowed=None,
    called="PACSBENCH",
    check_called_aet=False,
    answers=None,
):
    """One association: pynetdicom proposes, our accept() answers. Returns (ours, pynetdicom's view);
    `answers` collects the A-ASSOCIATE primitives pynetdicom received."""
    listener = socket.create_server(("127.0.0.1", 0))
    result = {}

    def acceptor():
        sock, _ = listener.accept()
        try:
            result["ours"] = accept(
                Wire(sock, 10),
                "PACSBENCH",
                supported,
                1 << 20,
                allowed,
                False,
                cache,
                check_called_aet=check_called_aet,
            )
        except AssociationRejected as exc:
            result["ours"] = exc
        result["done"] = True

    thread = threading.Thread(target=acceptor)
    thread.start()
    ae = AE(ae_title=calling)
    for abstract, syntaxes in proposals:
        ae.add_requested_context(abstract, syntaxes)
    handlers = [(evt.EVT_ACSE_RECV, lambda event: answers.append(event.primitive))] if answers is not None else []
    theirs = ae.associate("127.0.0.1", listener.getsockname()[1], ae_title=called, evt_handlers=handlers)
    thread.join(10)
    accepted = {str(cx.abstract_syntax): str(cx.transfer_syntax[0]) for cx in theirs.accepted_contexts}
    established = theirs.is_established
    if established:
        theirs.abort()
    listener.close()
    ours = result["ours"]
    if not isinstance(ours, AssociationRejected):
        ours.wire.close()
    return ours, established, accepted


def test_a_repeated_proposal_is_answered_from_the_cache_with_the_same_contexts(supported):
    cache = NegotiationCache()
    proposals = [
        (XRayAngiographicImageStorage, [JPEGLSLossless, ExplicitVRLittleEndian]),
        (Verification, [ExplicitVRLittleEndian]),
    ]
    first, ok1, seen1 = _associate(supported, cache, proposals)
    second, ok2, seen2 = _associate(supported, cache, proposals, calling="OTHER")
    assert ok1 and ok2 and (cache.misses, cache.hits) == (1, 1)
    assert seen1 == seen2 == {XRayAngiographicImageStorage: JPEGLSLossless, Verification: ExplicitVRLittleEndian}
    assert second.calling_ae == "OTHER" and second.peer_max_pdu == first.peer_max_pdu
    assert {c: cx.abstract_syntax for c, cx in second.contexts.items()} == {
        c: cx.abstract_syntax for c, cx in first.contexts.items()
    }


def test_a_different_proposal_gets_its_own_answer(supported):
    cache = NegotiationCache()
    _associate(supported, cache, [(XRayAngiographicImageStorage, [JPEGLSLossless])])
    ours, ok, seen = _associate(supported, cache, [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert ok and cache.misses == 2 and seen == {CTImageStorage: ExplicitVRLittleEndian}
    assert [cx.abstract_syntax for cx in ours.contexts.values()] == [CTImageStorage]


def test_the_calling_ae_is_checked_even_when_the_answer_is_cached(supported):
    cache = NegotiationCache()
    proposals = ECHO_ONLY
    _, ok, _ = _associate(supported, cache, proposals, calling="ALLOWED", allowed={"ALLOWED"})
    rejected, ok2, _ = _associate(supported, cache, proposals, calling="STRANGER", allowed={"ALLOWED"})
    assert ok and not ok2 and isinstance(rejected, AssociationRejected)


def test_the_cache_keeps_only_the_newest_answers(supported):
    cache = NegotiationCache(size=1)
    a = ECHO_ONLY
    b = [(CTImageStorage, [ExplicitVRLittleEndian])]
    for proposals in (a, b, a):
        _associate(supported, cache, proposals)
    assert (cache.misses, cache.hits) == (3, 0)


@pytest.mark.parametrize("check_called_aet", [False, True])
def test_an_association_addressed_to_our_ae_title_is_accepted(supported, check_called_aet):
    ours, ok, seen = _associate(supported, NegotiationCache(), ECHO_ONLY, check_called_aet=check_called_aet)
    assert ok and seen == {Verification: ExplicitVRLittleEndian} and ours.called_ae == "PACSBENCH"


def test_another_called_ae_title_is_answered_unless_it_is_checked(supported):
    ours, ok, _ = _associate(supported, NegotiationCache(), ECHO_ONLY, called="SOMEONE-ELSE")
    assert ok and ours.called_ae == "SOMEONE-ELSE"  # the default, as DCMTK's storescp and Orthanc


def test_a_checked_called_ae_title_that_is_not_ours_is_rejected_permanently(supported):
    answers = []
    rejected, ok, _ = _associate(
        supported, NegotiationCache(), ECHO_ONLY, called="SOMEONE-ELSE", check_called_aet=True, answers=answers
    )
    assert not ok and isinstance(rejected, AssociationRejected)
    # PS3.8 9.3.4: rejected-permanent, DICOM UL service-user, called AE title not recognized
    assert [(a.result, a.result_source, a.diagnostic) for a in answers] == [(0x01, 0x01, 0x07)]
