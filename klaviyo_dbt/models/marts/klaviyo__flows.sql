{#- One row per flow: what it earned and what its messages did (macros/pivots.sql owner_rollup). -#}
{{ klaviyo.owner_rollup('flow', ['flow_name', 'status', 'trigger_type', 'archived', 'created_at', 'updated_at']) }}
