-- `engine rules explain` through the tenants' API (GET /v1/events/{id}/explain) says
-- whether the engine has evaluated an event yet: the cursor's position, which holds no
-- organization's data, becomes readable to engine_tenant.
GRANT SELECT ON engine_cursors TO engine_tenant;
