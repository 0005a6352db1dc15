#!/usr/bin/env bash
# EgressLens recommendations as Azure CLI commands (extension: azure-firewall). Review before running.
# Observation window: 2026-11-24 00:00 to 2026-11-25 00:00 UTC (24 h)
set -euo pipefail

# Not written as rules: 6 recommendation(s) to investigate, never allowed (egresslens recommend show ID for the evidence):
#   f66ab598bd [high] Compromised source 10.244.3.17: isolate it
#   ea67e2b1cd [high] DNS tunnelling under t.exfil-example.net
#   2bebbdd2cd [high] Do not allow 'update.malware-cdn-example.com' (HTTPS:443) from subnet-10.244.1.0-10.244.6.255
#   778aa83be3 [high] Do not allow 'beacon.botnet-example.net' (HTTP:80) from subnet-10.244.1.0-10.244.6.255
#   2e481f047d [high] Do not allow '45.137.21.9' (TCP:4444) from subnet-10.244.1.0-10.244.6.255
#   152c514ab6 [high] Do not allow '185.220.101.47' (TCP:4444) from subnet-10.244.1.0-10.244.6.255

: "${POLICY:?set POLICY to the firewall policy name}"
: "${RG:?set RG to the resource group of the policy}"

# rule collection group egresslens-proposed
az network firewall policy rule-collection-group create --policy-name "$POLICY" --resource-group "$RG" --name egresslens-proposed --priority 400 --only-show-errors >/dev/null 2>&1 || true
az network firewall policy rule-collection-group collection add-filter-collection --policy-name "$POLICY" --resource-group "$RG" --rcg-name egresslens-proposed --name allow-app-subnet-10.240.0.0-24-subnet-10.241.0.0-24 --collection-priority 100 --action Allow --rule-name allow-ubuntu-mirrors --rule-type ApplicationRule --source-addresses 10.240.0.0/24 10.241.0.0/24 --protocols Http=80 --target-fqdns archive.ubuntu.com azure.archive.ubuntu.com changelogs.ubuntu.com esm.ubuntu.com security.ubuntu.com snapshot.ubuntu.com
az network firewall policy rule-collection-group collection add-filter-collection --policy-name "$POLICY" --resource-group "$RG" --rcg-name egresslens-proposed --name allow-app-subnet-10.241.0.0-24 --collection-priority 200 --action Allow --rule-name allow-packages.microsoft.com --rule-type ApplicationRule --source-addresses 10.241.0.0/24 --protocols Https=443 --target-fqdns packages.microsoft.com
az network firewall policy rule-collection-group collection add-filter-collection --policy-name "$POLICY" --resource-group "$RG" --rcg-name egresslens-proposed --name allow-app-subnet-10.244.1.0-10.244.6.255 --collection-priority 300 --action Allow --rule-name allow-telemetry.example-saas.io-and-6-more --rule-type ApplicationRule --source-addresses 10.244.1.0/24 10.244.2.0/23 10.244.4.0/23 10.244.6.0/24 --protocols Https=443 --target-fqdns '*.telemetry.example-saas.io' api.shipping-example.com api.tax-rates-example.com hooks.chat-example.io stcatalogimgweu.blob.core.windows.net stcheckoutweu01.blob.core.windows.net storderexports7.blob.core.windows.net
az network firewall policy rule-collection-group collection rule add --policy-name "$POLICY" --resource-group "$RG" --rcg-name egresslens-proposed --collection-name allow-app-subnet-10.244.1.0-10.244.6.255 --name allow-docker-hub --rule-type ApplicationRule --source-addresses 10.244.1.0/24 10.244.2.0/23 10.244.4.0/23 10.244.6.0/24 --protocols Https=443 --target-fqdns auth.docker.io docker.io production.cloudflare.docker.com registry-1.docker.io
az network firewall policy rule-collection-group collection rule add --policy-name "$POLICY" --resource-group "$RG" --rcg-name egresslens-proposed --collection-name allow-app-subnet-10.244.1.0-10.244.6.255 --name allow-ghcr --rule-type ApplicationRule --source-addresses 10.244.1.0/24 10.244.2.0/23 10.244.4.0/23 10.244.6.0/24 --protocols Https=443 --target-fqdns ghcr.io pkg-containers.githubusercontent.com
az network firewall policy rule-collection-group collection rule add --policy-name "$POLICY" --resource-group "$RG" --rcg-name egresslens-proposed --collection-name allow-app-subnet-10.244.1.0-10.244.6.255 --name allow-azure-monitor --rule-type ApplicationRule --source-addresses 10.244.1.0/24 10.244.2.0/23 10.244.4.0/23 10.244.6.0/24 --protocols Https=443 --target-fqdns '*.in.applicationinsights.azure.com' '*.ingest.monitor.azure.com' '*.metrics.ingest.monitor.azure.com' '*.monitoring.azure.com' '*.ods.opinsights.azure.com' '*.oms.opinsights.azure.com' dc.services.visualstudio.com global.handler.control.monitor.azure.com
az network firewall policy rule-collection-group collection rule add --policy-name "$POLICY" --resource-group "$RG" --rcg-name egresslens-proposed --collection-name allow-app-subnet-10.244.1.0-10.244.6.255 --name allow-debian-mirrors --rule-type ApplicationRule --source-addresses 10.244.1.0/24 10.244.2.0/23 10.244.4.0/23 10.244.6.0/24 --protocols Http=80 --target-fqdns deb.debian.org security.debian.org
# needs DNS proxy on the firewall (policy DNS settings) and its clients using the firewall as DNS server: a network rule's FQDNs are resolved by the proxy
az network firewall policy rule-collection-group collection add-filter-collection --policy-name "$POLICY" --resource-group "$RG" --rcg-name egresslens-proposed --name allow-net-subnet-10.240.0.0-24 --collection-priority 400 --action Allow --rule-name allow-udp-123-ntp.ubuntu.com --rule-type NetworkRule --source-addresses 10.240.0.0/24 --ip-protocols UDP --destination-fqdns ntp.ubuntu.com --destination-ports 123
az network firewall policy rule-collection-group collection add-filter-collection --policy-name "$POLICY" --resource-group "$RG" --rcg-name egresslens-proposed --name allow-net-subnet-10.241.0.0-24 --collection-priority 500 --action Allow --rule-name allow-icmp-1.1.1.1 --rule-type NetworkRule --source-addresses 10.241.0.0/24 --ip-protocols ICMP --destination-addresses 1.1.1.1 --destination-ports '*'
# needs DNS proxy on the firewall (policy DNS settings) and its clients using the firewall as DNS server: a network rule's FQDNs are resolved by the proxy
az network firewall policy rule-collection-group collection add-filter-collection --policy-name "$POLICY" --resource-group "$RG" --rcg-name egresslens-proposed --name allow-net-subnet-10.244.1.0-10.244.6.255 --collection-priority 600 --action Allow --rule-name allow-tcp-5432-orders-db.pg-example-hosting.net --rule-type NetworkRule --source-addresses 10.244.1.0/24 10.244.2.0/23 10.244.4.0/23 10.244.6.0/24 --ip-protocols TCP --destination-fqdns orders-db.pg-example-hosting.net --destination-ports 5432

# rule collection group app-egress-narrow
az network firewall policy rule-collection-group create --policy-name "$POLICY" --resource-group "$RG" --name app-egress-narrow --priority 299 --only-show-errors >/dev/null 2>&1 || true
az network firewall policy rule-collection-group collection add-filter-collection --policy-name "$POLICY" --resource-group "$RG" --rcg-name app-egress-narrow --name workload-apps-narrow --collection-priority 200 --action Allow --rule-name allow-payments-api-narrow --rule-type ApplicationRule --source-addresses 10.244.1.0/24 10.244.2.0/23 10.244.4.0/23 10.244.6.0/24 --protocols Https=443 --target-fqdns api.payments-example.com
az network firewall policy rule-collection-group collection rule add --policy-name "$POLICY" --resource-group "$RG" --rcg-name app-egress-narrow --collection-name workload-apps-narrow --name allow-api-github-narrow --rule-type ApplicationRule --source-addresses 10.241.0.0/24 10.244.1.0/24 10.244.2.0/23 10.244.4.0/23 10.244.6.0/24 --protocols Https=443 --target-fqdns api.github.com
az network firewall policy rule-collection-group collection rule add --policy-name "$POLICY" --resource-group "$RG" --rcg-name app-egress-narrow --collection-name workload-apps-narrow --name allow-github-wildcard-narrow --rule-type ApplicationRule --source-addresses 10.244.1.0/24 10.244.2.0/23 10.244.4.0/23 10.244.6.0/24 --protocols Https=443 --target-fqdns codeload.github.com uploads.github.com

# rule collection group aks-egress-narrow
az network firewall policy rule-collection-group create --policy-name "$POLICY" --resource-group "$RG" --name aks-egress-narrow --priority 199 --only-show-errors >/dev/null 2>&1 || true
az network firewall policy rule-collection-group collection add-filter-collection --policy-name "$POLICY" --resource-group "$RG" --rcg-name aks-egress-narrow --name aksfwnr-narrow --collection-priority 100 --action Allow --rule-name allow-icmp-hub-narrow --rule-type NetworkRule --source-addresses 10.240.0.0/22 10.241.0.0/24 --ip-protocols ICMP --destination-addresses 10.0.1.4 --destination-ports '*'

# Removals: disable first (remove the rule and keep this script), delete for good after the waiting period.
# no traffic matched this rule in the 24-hour window (2026-11-24 00:00 to 2026-11-25 00:00 UTC (24 h)); rules for rare jobs (monthly, quarterly) may need a longer window
# az network firewall policy rule-collection-group collection rule remove --policy-name "$POLICY" --resource-group "$RG" --rcg-name app-egress --collection-name workload-apps --name allow-legacy-ftp-mirror
# no traffic matched this rule in the 24-hour window (2026-11-24 00:00 to 2026-11-25 00:00 UTC (24 h)); rules for rare jobs (monthly, quarterly) may need a longer window
# az network firewall policy rule-collection-group collection rule remove --policy-name "$POLICY" --resource-group "$RG" --rcg-name app-egress --collection-name legacy-network --name allow-smtp-relay

