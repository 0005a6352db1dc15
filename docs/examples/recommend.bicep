// EgressLens recommendations. Observation window: 2026-11-24 00:00 to 2026-11-25 00:00 UTC (24 h)

// Not written as rules: 6 recommendation(s) to investigate, never allowed (egresslens recommend show ID for the evidence):
//   f66ab598bd [high] Compromised source 10.244.3.17: isolate it
//   ea67e2b1cd [high] DNS tunnelling under t.exfil-example.net
//   2bebbdd2cd [high] Do not allow 'update.malware-cdn-example.com' (HTTPS:443) from subnet-10.244.1.0-10.244.6.255
//   778aa83be3 [high] Do not allow 'beacon.botnet-example.net' (HTTP:80) from subnet-10.244.1.0-10.244.6.255
//   2e481f047d [high] Do not allow '45.137.21.9' (TCP:4444) from subnet-10.244.1.0-10.244.6.255
//   152c514ab6 [high] Do not allow '185.220.101.47' (TCP:4444) from subnet-10.244.1.0-10.244.6.255

param firewallPolicyName string

resource policy 'Microsoft.Network/firewallPolicies@2023-09-01' existing = {
  name: firewallPolicyName
}

resource rcg0_egresslens_proposed 'Microsoft.Network/firewallPolicies/ruleCollectionGroups@2023-09-01' = {
  parent: policy
  name: 'egresslens-proposed'
  properties: {
    priority: 400
    ruleCollections: [
      {
        ruleCollectionType: 'FirewallPolicyFilterRuleCollection'
        name: 'allow-app-subnet-10.240.0.0-24-subnet-10.241.0.0-24'
        priority: 100
        action: {
          type: 'Allow'
        }
        rules: [
          {
            ruleType: 'ApplicationRule'
            name: 'allow-ubuntu-mirrors'
            sourceAddresses: [
              '10.240.0.0/24'
              '10.241.0.0/24'
            ]
            protocols: [
              {
                protocolType: 'Http'
                port: 80
              }
            ]
            targetFqdns: [
              'archive.ubuntu.com'
              'azure.archive.ubuntu.com'
              'changelogs.ubuntu.com'
              'esm.ubuntu.com'
              'security.ubuntu.com'
              'snapshot.ubuntu.com'
            ]
            fqdnTags: []
          }
        ]
      }
      {
        ruleCollectionType: 'FirewallPolicyFilterRuleCollection'
        name: 'allow-app-subnet-10.241.0.0-24'
        priority: 200
        action: {
          type: 'Allow'
        }
        rules: [
          {
            ruleType: 'ApplicationRule'
            name: 'allow-packages.microsoft.com'
            sourceAddresses: [
              '10.241.0.0/24'
            ]
            protocols: [
              {
                protocolType: 'Https'
                port: 443
              }
            ]
            targetFqdns: [
              'packages.microsoft.com'
            ]
            fqdnTags: []
          }
        ]
      }
      {
        ruleCollectionType: 'FirewallPolicyFilterRuleCollection'
        name: 'allow-app-subnet-10.244.1.0-10.244.6.255'
        priority: 300
        action: {
          type: 'Allow'
        }
        rules: [
          {
            ruleType: 'ApplicationRule'
            name: 'allow-telemetry.example-saas.io-and-6-more'
            sourceAddresses: [
              '10.244.1.0/24'
              '10.244.2.0/24'
              '10.244.3.0/28'
              '10.244.3.16/32'
              '10.244.3.18/31'
              '10.244.3.20/30'
              '10.244.3.24/29'
              '10.244.3.32/27'
              '10.244.3.64/26'
              '10.244.3.128/25'
              '10.244.4.0/23'
              '10.244.6.0/24'
            ]
            protocols: [
              {
                protocolType: 'Https'
                port: 443
              }
            ]
            targetFqdns: [
              '*.telemetry.example-saas.io'
              'api.shipping-example.com'
              'api.tax-rates-example.com'
              'hooks.chat-example.io'
              'stcatalogimgweu.blob.core.windows.net'
              'stcheckoutweu01.blob.core.windows.net'
              'storderexports7.blob.core.windows.net'
            ]
            fqdnTags: []
          }
          {
            ruleType: 'ApplicationRule'
            name: 'allow-docker-hub'
            sourceAddresses: [
              '10.244.1.0/24'
              '10.244.2.0/24'
              '10.244.3.0/28'
              '10.244.3.16/32'
              '10.244.3.18/31'
              '10.244.3.20/30'
              '10.244.3.24/29'
              '10.244.3.32/27'
              '10.244.3.64/26'
              '10.244.3.128/25'
              '10.244.4.0/23'
              '10.244.6.0/24'
            ]
            protocols: [
              {
                protocolType: 'Https'
                port: 443
              }
            ]
            targetFqdns: [
              'auth.docker.io'
              'docker.io'
              'production.cloudflare.docker.com'
              'registry-1.docker.io'
            ]
            fqdnTags: []
          }
          {
            ruleType: 'ApplicationRule'
            name: 'allow-ghcr'
            sourceAddresses: [
              '10.244.1.0/24'
              '10.244.2.0/24'
              '10.244.3.0/28'
              '10.244.3.16/32'
              '10.244.3.18/31'
              '10.244.3.20/30'
              '10.244.3.24/29'
              '10.244.3.32/27'
              '10.244.3.64/26'
              '10.244.3.128/25'
              '10.244.4.0/23'
              '10.244.6.0/24'
            ]
            protocols: [
              {
                protocolType: 'Https'
                port: 443
              }
            ]
            targetFqdns: [
              'ghcr.io'
              'pkg-containers.githubusercontent.com'
            ]
            fqdnTags: []
          }
          {
            ruleType: 'ApplicationRule'
            name: 'allow-azure-monitor'
            sourceAddresses: [
              '10.244.1.0/24'
              '10.244.2.0/24'
              '10.244.3.0/28'
              '10.244.3.16/32'
              '10.244.3.18/31'
              '10.244.3.20/30'
              '10.244.3.24/29'
              '10.244.3.32/27'
              '10.244.3.64/26'
              '10.244.3.128/25'
              '10.244.4.0/23'
              '10.244.6.0/24'
            ]
            protocols: [
              {
                protocolType: 'Https'
                port: 443
              }
            ]
            targetFqdns: [
              '*.in.applicationinsights.azure.com'
              '*.ingest.monitor.azure.com'
              '*.metrics.ingest.monitor.azure.com'
              '*.monitoring.azure.com'
              '*.ods.opinsights.azure.com'
              '*.oms.opinsights.azure.com'
              'dc.services.visualstudio.com'
              'global.handler.control.monitor.azure.com'
            ]
            fqdnTags: []
          }
          {
            ruleType: 'ApplicationRule'
            name: 'allow-debian-mirrors'
            sourceAddresses: [
              '10.244.1.0/24'
              '10.244.2.0/24'
              '10.244.3.0/28'
              '10.244.3.16/32'
              '10.244.3.18/31'
              '10.244.3.20/30'
              '10.244.3.24/29'
              '10.244.3.32/27'
              '10.244.3.64/26'
              '10.244.3.128/25'
              '10.244.4.0/23'
              '10.244.6.0/24'
            ]
            protocols: [
              {
                protocolType: 'Http'
                port: 80
              }
            ]
            targetFqdns: [
              'deb.debian.org'
              'security.debian.org'
            ]
            fqdnTags: []
          }
        ]
      }
      {
        ruleCollectionType: 'FirewallPolicyFilterRuleCollection'
        name: 'allow-net-subnet-10.240.0.0-24'
        priority: 400
        action: {
          type: 'Allow'
        }
        rules: [
          // needs DNS proxy on the firewall (a policy's DNS settings, a classic firewall's additionalProperties) with requireProxyForNetworkRules, and its clients using the firewall as DNS server: a network rule's FQDNs are resolved by the proxy
          {
            ruleType: 'NetworkRule'
            name: 'allow-udp-123-ntp.ubuntu.com'
            sourceAddresses: [
              '10.240.0.0/24'
            ]
            ipProtocols: [
              'UDP'
            ]
            destinationAddresses: []
            destinationFqdns: [
              'ntp.ubuntu.com'
            ]
            destinationPorts: [
              '123'
            ]
          }
        ]
      }
      {
        ruleCollectionType: 'FirewallPolicyFilterRuleCollection'
        name: 'allow-net-subnet-10.241.0.0-24'
        priority: 500
        action: {
          type: 'Allow'
        }
        rules: [
          {
            ruleType: 'NetworkRule'
            name: 'allow-icmp-1.1.1.1'
            sourceAddresses: [
              '10.241.0.0/24'
            ]
            ipProtocols: [
              'ICMP'
            ]
            destinationAddresses: [
              '1.1.1.1'
            ]
            destinationFqdns: []
            destinationPorts: [
              '*'
            ]
          }
        ]
      }
      {
        ruleCollectionType: 'FirewallPolicyFilterRuleCollection'
        name: 'allow-net-subnet-10.244.1.0-10.244.6.255'
        priority: 600
        action: {
          type: 'Allow'
        }
        rules: [
          // needs DNS proxy on the firewall (a policy's DNS settings, a classic firewall's additionalProperties) with requireProxyForNetworkRules, and its clients using the firewall as DNS server: a network rule's FQDNs are resolved by the proxy
          {
            ruleType: 'NetworkRule'
            name: 'allow-tcp-5432-orders-db.pg-example-hosting.net'
            sourceAddresses: [
              '10.244.1.0/24'
              '10.244.2.0/24'
              '10.244.3.0/28'
              '10.244.3.16/32'
              '10.244.3.18/31'
              '10.244.3.20/30'
              '10.244.3.24/29'
              '10.244.3.32/27'
              '10.244.3.64/26'
              '10.244.3.128/25'
              '10.244.4.0/23'
              '10.244.6.0/24'
            ]
            ipProtocols: [
              'TCP'
            ]
            destinationAddresses: []
            destinationFqdns: [
              'orders-db.pg-example-hosting.net'
            ]
            destinationPorts: [
              '5432'
            ]
          }
        ]
      }
    ]
  }
}

resource rcg1_app_egress_narrow 'Microsoft.Network/firewallPolicies/ruleCollectionGroups@2023-09-01' = {
  parent: policy
  name: 'app-egress-narrow'
  dependsOn: [
    rcg0_egresslens_proposed
  ]
  properties: {
    priority: 299
    ruleCollections: [
      {
        ruleCollectionType: 'FirewallPolicyFilterRuleCollection'
        name: 'workload-apps-narrow'
        priority: 200
        action: {
          type: 'Allow'
        }
        rules: [
          {
            ruleType: 'ApplicationRule'
            name: 'allow-payments-api-narrow'
            sourceAddresses: [
              '10.244.1.0/24'
              '10.244.2.0/24'
              '10.244.3.0/28'
              '10.244.3.16/32'
              '10.244.3.18/31'
              '10.244.3.20/30'
              '10.244.3.24/29'
              '10.244.3.32/27'
              '10.244.3.64/26'
              '10.244.3.128/25'
              '10.244.4.0/23'
              '10.244.6.0/24'
            ]
            protocols: [
              {
                protocolType: 'Https'
                port: 443
              }
            ]
            targetFqdns: [
              'api.payments-example.com'
            ]
            fqdnTags: []
          }
          {
            ruleType: 'ApplicationRule'
            name: 'allow-api-github-narrow'
            sourceAddresses: [
              '10.241.0.0/24'
              '10.244.1.0/24'
              '10.244.2.0/24'
              '10.244.3.0/28'
              '10.244.3.16/32'
              '10.244.3.18/31'
              '10.244.3.20/30'
              '10.244.3.24/29'
              '10.244.3.32/27'
              '10.244.3.64/26'
              '10.244.3.128/25'
              '10.244.4.0/23'
              '10.244.6.0/24'
            ]
            protocols: [
              {
                protocolType: 'Https'
                port: 443
              }
            ]
            targetFqdns: [
              'api.github.com'
            ]
            fqdnTags: []
          }
          {
            ruleType: 'ApplicationRule'
            name: 'allow-github-wildcard-narrow'
            sourceAddresses: [
              '10.244.1.0/24'
              '10.244.2.0/24'
              '10.244.3.0/28'
              '10.244.3.16/32'
              '10.244.3.18/31'
              '10.244.3.20/30'
              '10.244.3.24/29'
              '10.244.3.32/27'
              '10.244.3.64/26'
              '10.244.3.128/25'
              '10.244.4.0/23'
              '10.244.6.0/24'
            ]
            protocols: [
              {
                protocolType: 'Https'
                port: 443
              }
            ]
            targetFqdns: [
              'codeload.github.com'
              'uploads.github.com'
            ]
            fqdnTags: []
          }
        ]
      }
    ]
  }
}

resource rcg2_aks_egress_narrow 'Microsoft.Network/firewallPolicies/ruleCollectionGroups@2023-09-01' = {
  parent: policy
  name: 'aks-egress-narrow'
  dependsOn: [
    rcg1_app_egress_narrow
  ]
  properties: {
    priority: 199
    ruleCollections: [
      {
        ruleCollectionType: 'FirewallPolicyFilterRuleCollection'
        name: 'aksfwnr-narrow'
        priority: 100
        action: {
          type: 'Allow'
        }
        rules: [
          {
            ruleType: 'NetworkRule'
            name: 'allow-icmp-hub-narrow'
            sourceAddresses: [
              '10.240.0.0/22'
              '10.241.0.0/24'
            ]
            ipProtocols: [
              'ICMP'
            ]
            destinationAddresses: [
              '10.0.1.4'
            ]
            destinationFqdns: []
            destinationPorts: [
              '*'
            ]
          }
        ]
      }
    ]
  }
}

// remove-rule: app-egress/workload-apps/allow-legacy-ftp-mirror (disable first, then delete)
// remove-rule: app-egress/legacy-network/allow-smtp-relay (disable first, then delete)
