from aigw_sidecar.admission.service import AdmissionService
from aigw_sidecar.keys.model import KeySpec, Limits
from aigw_sidecar.keys.service import KeyService


async def test_a_new_key_is_admitted_until_its_requests_per_minute_are_used(
    keys: KeyService, admission: AdmissionService
) -> None:
    key, secret = await keys.create(KeySpec(name="k", limits=Limits(requests_per_minute=2)))
    results = [(await admission.authorize(secret)).allowed for _ in range(3)]
    assert results == [True, True, False]
