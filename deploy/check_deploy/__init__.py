"""hostie's deployment checks, run by deploy/check as `python -m check_deploy` (with
deploy/ on PYTHONPATH): common holds what the checks share (the problem list, durations, YAML,
label selectors, hostie's defaults); manifests checks rendered Kubernetes objects; rules keeps the
kustomize PrometheusRule in sync with the alert rules; compose checks docker-compose.yml and its
nginx and Prometheus configurations, and the Redis topology overlays merged onto it; redis_url
reads hostie's --redis-url forms; emulation runs the Compose topology on loopback;
topology_emulation runs an overlay's Redis side with the local redis-server; image checks the
Dockerfile; metrics checks the dashboard's structure; __main__ is the command line.
"""
