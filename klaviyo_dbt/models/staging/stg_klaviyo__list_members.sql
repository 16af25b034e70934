{#- List memberships (macros/groups.sql). -#}
{{ klaviyo.stage_members('list') }}
