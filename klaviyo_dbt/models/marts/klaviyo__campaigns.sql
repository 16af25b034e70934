{#- One row per campaign: what it earned and what its messages did (macros/pivots.sql owner_rollup). -#}
{{ klaviyo.owner_rollup('campaign', [
    'campaign_name', 'status', 'channel', 'archived', 'created_at', 'scheduled_at', 'send_time', 'updated_at']) }}
