{#- Segments (macros/groups.sql). -#}
{{ klaviyo.stage_groups('segment') }}
