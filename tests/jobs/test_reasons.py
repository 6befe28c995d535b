"""Graph failures mapped onto the job's reasons, and the reasons' stored values."""

from __future__ import annotations

import json

import pytest

from graphclient.errors import GraphAuthError, GraphError, GraphPermanentError, GraphTransientError
from jobs.models import Reason, UserResult, UserStatus
from jobs.reasons import reason_for


def bad_request(message: str) -> GraphPermanentError:
    return GraphPermanentError(message, status=400, code="Request_BadRequest")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (GraphPermanentError("gone", status=404, code="Request_ResourceNotFound"), Reason.USER_NOT_FOUND),
        (GraphPermanentError("denied", status=403, code="Authorization_RequestDenied"), Reason.FORBIDDEN),
        (GraphAuthError("token request failed: invalid_client", status=401, code="invalid_client"), Reason.AUTH_FAILED),
        (bad_request("License assignment failed because service plans require a usage location."),
         Reason.USAGE_LOCATION_MISSING),
        (bad_request("Invalid usage location 'XX'."), Reason.INVALID_USAGE_LOCATION),
        (bad_request("Subscription does not have any available licenses."), Reason.NO_FREE_SEAT),
        (bad_request("User does not have a corresponding license."), Reason.LICENSE_NOT_ASSIGNED),
        (bad_request("User license is inherited from a group membership and it cannot be removed directly from the "
                     "user."), Reason.INHERITED_FROM_GROUP),
        (bad_request("Conflicting service plans: A and B."), Reason.CONFLICTING_LICENSES),
        (bad_request("License 'x' does not correspond to a valid company license."), Reason.UNKNOWN_SKU),
        (bad_request("License 'x' cannot be assigned to a user."), Reason.SKU_NOT_ASSIGNABLE),
        (bad_request("Invalid disabled plan 'y'."), Reason.INVALID_DISABLED_PLAN),
        (bad_request("Something new Graph says."), Reason.BAD_REQUEST),
        (GraphTransientError("503", status=503), Reason.GRAPH_ERROR),
        (GraphError("no response for batch item", ambiguous=True), Reason.GRAPH_ERROR),
    ],
)
def test_reason_for(error: GraphError, expected: Reason) -> None:
    assert reason_for(error) is expected


def test_a_reason_is_stored_as_its_plain_string() -> None:
    result = UserResult(row=2, user="a@x", status=UserStatus.FAILED, reason=Reason.CHUNK_FAILED_REPEATEDLY)
    stored = json.loads(json.dumps(result.to_json()))
    assert stored["reason"] == "chunk_failed_repeatedly"
    assert UserResult.from_json(stored).reason == Reason.CHUNK_FAILED_REPEATEDLY
