"""A failed Graph call as the job reports it: the Reason a user's operation failed."""

from __future__ import annotations

from graphclient.errors import GraphAuthError, GraphError
from jobs.models import Reason


def reason_for(error: GraphError) -> Reason:
    """Map a Graph failure to our normalized reason.

    Graph reports nearly every license failure as 400 `Request_BadRequest` and only the message
    differs (messages "can change at any time"), so we match on stable fragments and fall back to
    a generic reason rather than guessing.
    """
    if isinstance(error, GraphAuthError):  # the identity platform refused our credentials
        return Reason.AUTH_FAILED
    status, code = error.status, error.code
    text = (error.message or "").lower()
    if status == 404 or code == "Request_ResourceNotFound":
        return Reason.USER_NOT_FOUND
    if status == 403 or code == "Authorization_RequestDenied":
        return Reason.FORBIDDEN
    if status == 401:
        return Reason.AUTH_FAILED
    if "usage location" in text:
        return Reason.USAGE_LOCATION_MISSING if "license assignment" in text else Reason.INVALID_USAGE_LOCATION
    if "does not have any available licenses" in text or "not enough licenses" in text:
        return Reason.NO_FREE_SEAT
    if "inherited from" in text and "group" in text:  # a group gave the license after the plan read the user
        return Reason.INHERITED_FROM_GROUP
    if "does not have a corresponding license" in text:
        return Reason.LICENSE_NOT_ASSIGNED
    if "conflicting" in text or "mutually exclusive" in text:
        return Reason.CONFLICTING_LICENSES
    if "does not correspond to a valid company license" in text:
        return Reason.UNKNOWN_SKU
    if "cannot be assigned to a user" in text:
        return Reason.SKU_NOT_ASSIGNABLE
    if "disabled plan" in text or "service plan" in text:
        return Reason.INVALID_DISABLED_PLAN
    if status == 400:
        return Reason.BAD_REQUEST
    return Reason.GRAPH_ERROR
