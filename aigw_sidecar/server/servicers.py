"""gRPC servicers: proto in, one domain call, proto out. Nothing else lives here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aigw_sidecar.admission.service import AdmissionService, no_pricing
from aigw_sidecar.api.v1 import admission_pb2 as adm_pb
from aigw_sidecar.api.v1 import admission_pb2_grpc as adm_grpc
from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.api.v1 import keys_pb2_grpc as keys_grpc
from aigw_sidecar.keys.audit import AuditedKeyService
from aigw_sidecar.pricing import catalog
from aigw_sidecar.pricing.table import PriceTable
from aigw_sidecar.server import convert
from aigw_sidecar.server.status import domain_errors

Ctx = Any  # grpc.aio.ServicerContext; grpc ships no type information


class AdmissionServicer(adm_grpc.AdmissionServicer):
    def __init__(self, service: AdmissionService) -> None:
        self._service = service

    @domain_errors
    async def Authorize(
        self, request: adm_pb.AuthorizeRequest, context: Ctx
    ) -> adm_pb.AuthorizeResponse:
        decision = await self._service.authorize(
            request.secret, request.request_id, convert.estimate_from_proto(request),
            request.model,
        )
        return convert.decision_to_proto(decision)

    @domain_errors
    async def RecordUsage(
        self, request: adm_pb.RecordUsageRequest, context: Ctx
    ) -> adm_pb.RecordUsageResponse:
        result = await self._service.record_usage(convert.usage_from_proto(request))
        return convert.usage_result_to_proto(result)

    @domain_errors
    async def ReleaseReservation(
        self, request: adm_pb.ReleaseReservationRequest, context: Ctx
    ) -> adm_pb.ReleaseReservationResponse:
        released = await self._service.release_reservation(request.key_id, request.request_id)
        return adm_pb.ReleaseReservationResponse(released=released)


class KeyManagementServicer(keys_grpc.KeyManagementServicer):
    def __init__(
        self,
        service: AuditedKeyService,
        pricing: Callable[[], PriceTable | None] = no_pricing,
    ) -> None:
        """Args:
        pricing: the price table in force (it may be reloaded), or None without one.
        """
        self._service = service
        self._pricing = pricing

    @domain_errors
    async def CreateKey(
        self, request: keys_pb.CreateKeyRequest, context: Ctx
    ) -> keys_pb.CreateKeyResponse:
        key, secret = await self._service.create(convert.spec_from_create(request))
        return keys_pb.CreateKeyResponse(key=convert.key_to_proto(key), secret=secret)

    @domain_errors
    async def ImportLegacyKey(
        self, request: keys_pb.ImportLegacyKeyRequest, context: Ctx
    ) -> keys_pb.ImportLegacyKeyResponse:
        key = await self._service.import_legacy(request.secret, convert.spec_from_import(request))
        return keys_pb.ImportLegacyKeyResponse(key=convert.key_to_proto(key))

    @domain_errors
    async def GetKey(self, request: keys_pb.GetKeyRequest, context: Ctx) -> keys_pb.GetKeyResponse:
        key = await self._service.get(request.key_id)
        return keys_pb.GetKeyResponse(key=convert.key_to_proto(key))

    @domain_errors
    async def ListKeys(
        self, request: keys_pb.ListKeysRequest, context: Ctx
    ) -> keys_pb.ListKeysResponse:
        page = await self._service.list(
            convert.filter_from_list(request), request.page_size, request.page_token,
            convert.view_from_list(request),
        )
        return convert.key_page_to_proto(page)

    @domain_errors
    async def UpdateKey(
        self, request: keys_pb.UpdateKeyRequest, context: Ctx
    ) -> keys_pb.UpdateKeyResponse:
        key = await self._service.update(request.key_id, convert.update_from_proto(request))
        return keys_pb.UpdateKeyResponse(key=convert.key_to_proto(key))

    @domain_errors
    async def RotateKeySecret(
        self, request: keys_pb.RotateKeySecretRequest, context: Ctx
    ) -> keys_pb.RotateKeySecretResponse:
        key, secret = await self._service.rotate_secret(request.key_id, request.grace_period_s)
        return keys_pb.RotateKeySecretResponse(key=convert.key_to_proto(key), secret=secret)

    @domain_errors
    async def EnableKey(
        self, request: keys_pb.EnableKeyRequest, context: Ctx
    ) -> keys_pb.EnableKeyResponse:
        key = await self._service.set_enabled(request.key_id, True)
        return keys_pb.EnableKeyResponse(key=convert.key_to_proto(key))

    @domain_errors
    async def DisableKey(
        self, request: keys_pb.DisableKeyRequest, context: Ctx
    ) -> keys_pb.DisableKeyResponse:
        key = await self._service.set_enabled(request.key_id, False)
        return keys_pb.DisableKeyResponse(key=convert.key_to_proto(key))

    @domain_errors
    async def DeleteKey(
        self, request: keys_pb.DeleteKeyRequest, context: Ctx
    ) -> keys_pb.DeleteKeyResponse:
        await self._service.delete(request.key_id)
        return keys_pb.DeleteKeyResponse()

    @domain_errors
    async def GetKeyOverview(
        self, request: keys_pb.GetKeyOverviewRequest, context: Ctx
    ) -> keys_pb.GetKeyOverviewResponse:
        overview = await self._service.overview(request.key_id)
        return keys_pb.GetKeyOverviewResponse(overview=convert.overview_to_proto(overview))

    @domain_errors
    async def GetKeyUsageHistory(
        self, request: keys_pb.GetKeyUsageHistoryRequest, context: Ctx
    ) -> keys_pb.GetKeyUsageHistoryResponse:
        history = await self._service.usage_history(request.key_id, request.days)
        return keys_pb.GetKeyUsageHistoryResponse(
            days=[convert.daily_usage_to_proto(day) for day in history]
        )

    @domain_errors
    async def ListAuditEntries(
        self, request: keys_pb.ListAuditEntriesRequest, context: Ctx
    ) -> keys_pb.ListAuditEntriesResponse:
        entries, token = await self._service.audit_entries(
            request.key_id, request.page_size, request.page_token
        )
        return keys_pb.ListAuditEntriesResponse(
            entries=[convert.audit_entry_to_proto(e) for e in entries], next_page_token=token
        )

    @domain_errors
    async def ListEvents(
        self, request: keys_pb.ListEventsRequest, context: Ctx
    ) -> keys_pb.ListEventsResponse:
        events, cursor = await self._service.list_events(
            request.key_id, request.after, request.page_size
        )
        return keys_pb.ListEventsResponse(
            events=[convert.event_to_proto(e) for e in events], next_cursor=cursor
        )

    @domain_errors
    async def ListModelPrices(
        self, request: keys_pb.ListModelPricesRequest, context: Ctx
    ) -> keys_pb.ListModelPricesResponse:
        table = self._pricing()
        prices, token = catalog.page(
            catalog.listed(table, request.contains), request.page_size, request.page_token
        )
        return keys_pb.ListModelPricesResponse(
            prices=[convert.model_price_to_proto(p) for p in prices], next_page_token=token,
            table=table.describe() if table is not None else "no price table",
        )

    @domain_errors
    async def GetModelPrice(
        self, request: keys_pb.GetModelPriceRequest, context: Ctx
    ) -> keys_pb.GetModelPriceResponse:
        table = self._pricing()
        found = catalog.lookup(table, request.model)
        reply = keys_pb.GetModelPriceResponse(
            priced=found is not None,
            unknown_model=table.unknown_model.value if table is not None else "zero",
        )
        if found is not None:
            reply.price.CopyFrom(convert.model_price_to_proto(found))
        return reply
