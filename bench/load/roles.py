"""The user types a scenario can name, DIMSE (bench.load.users) and DICOMweb (bench.load.web_users), and this
run's locust user classes made from them."""

from __future__ import annotations

from locust import User

from bench.load.users import EchoUser, LoadContext, ModalityUser, QueryUser, WorkstationUser
from bench.load.web_users import DicomwebUser, QidoUser, StowUser, WadoUser
from bench.scenario.file import Scenario
from bench.scenario.users import role_of

ROLES = {
    "modality": ModalityUser,
    "workstation": WorkstationUser,
    "query": QueryUser,
    "echo": EchoUser,
    "stow": StowUser,
    "qido": QidoUser,
    "wado": WadoUser,
}


def user_classes(scenario: Scenario, context: LoadContext) -> list[type[User]]:
    """This run's user classes: one per user group in the scenario, named after the role and the group
    (the master and its workers find each other's classes by name), sized by count or weight."""
    classes = []
    for name, group in scenario.users.groups().items():
        if group.count == 0:
            continue  # a type switched off
        role = ROLES[role_of(name)]
        attributes = {"abstract": False, "context": context, "weight": group.weight, "wait_time": role.pacing(group)}
        if issubclass(role, DicomwebUser):  # the HTTP client's timeouts: the scenario's, as for associations
            attributes |= {"network_timeout": scenario.client.timeout, "connection_timeout": scenario.client.timeout}
        if group.count is not None:
            attributes["fixed_count"] = group.count
        class_name = role.__name__
        if name != role_of(name):  # a named modality group: [users.modalities.NAME]
            attributes["group"] = group
            class_name = f"{role.__name__}_{name.split('.', 1)[1]}"
        classes.append(type(class_name, (role,), attributes))
    return classes
