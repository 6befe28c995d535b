"""`PATCH /_sim/skus/{skuId}`: tests buy or lose seats of a SKU."""

from __future__ import annotations

import httpx

from graphsim.server import SimServer
from tests.graphsim.helpers import SKU, assign_body


def _free_users(sim: SimServer, n: int) -> list[str]:
    return [u.id for u in sim.state.user_order if u.usage_location and not u.licenses][:n]


def test_losing_and_buying_seats(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    consumed = sim.state.consumed[SKU["VISIOCLIENT"]]  # seats the fixture already assigned
    response = control.patch(f"/skus/{SKU['VISIOCLIENT']}", json={"enabled": consumed})
    assert response.status_code == 200
    assert response.json()["prepaidUnits"]["enabled"] == consumed and response.json()["freeUnits"] == 0
    sku = next(s for s in graph.get("/subscribedSkus").json()["value"] if s["skuId"] == SKU["VISIOCLIENT"])
    assert sku["prepaidUnits"]["enabled"] == consumed and sku["consumedUnits"] == consumed

    first, second = _free_users(sim, 2)
    refused = graph.post(f"/users/{first}/assignLicense", json=assign_body(["VISIOCLIENT"]))
    assert refused.status_code == 400
    assert "does not have any available licenses" in refused.json()["error"]["message"]

    bought = control.patch("/skus/VISIOCLIENT", json={"enabled": consumed + 1})  # by part number too
    assert bought.status_code == 200 and bought.json()["freeUnits"] == 1
    assert graph.post(f"/users/{first}/assignLicense", json=assign_body(["VISIOCLIENT"])).status_code == 200
    assert graph.post(f"/users/{second}/assignLicense", json=assign_body(["VISIOCLIENT"])).status_code == 400

    # Fewer seats than are in use: nothing is taken away, the count just goes negative.
    assert control.patch("/skus/VISIOCLIENT", json={"enabled": 0}).json()["freeUnits"] == -(consumed + 1)
    control.post("/reset")
    assert sim.state.free_seats("VISIOCLIENT") == 10


def test_bad_seat_updates(control: httpx.Client) -> None:
    assert control.patch("/skus/00000000-0000-4000-8000-000000000000", json={"enabled": 5}).status_code == 404
    for bad in ({}, {"enabled": -1}, {"enabled": 2.5}, {"enabled": True}, {"enabled": 5, "warning": 1}):
        response = control.patch(f"/skus/{SKU['EMS']}", json=bad)
        assert response.status_code == 400 and "error" in response.json()
    assert control.post(f"/skus/{SKU['EMS']}", json={"enabled": 5}).status_code == 404
