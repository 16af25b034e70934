{#- Lists (macros/groups.sql). -#}
{{ klaviyo.stage_groups('list') }}
