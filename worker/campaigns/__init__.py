"""Campaigns with holdouts: definition, deterministic arms, assignment records (docs/campaigns.md).

``model`` (pure: what a campaign is, which arm a customer gets, who enters), ``registry`` (the
campaigns in Redis), ``store`` + ``assign.lua`` (one assignment per customer and campaign, in
the customer's space), ``publisher`` (the ``campaign-assignments`` topic), ``service`` (the
worker's consumer of segment changes) and ``cli`` (``segstream campaign``).
"""
