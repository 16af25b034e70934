{#- Segment memberships (macros/groups.sql). -#}
{{ klaviyo.stage_members('segment') }}
