# EgressLens recommendations. Observation window: 2026-11-24 00:00 to 2026-11-25 00:00 UTC (24 h)

# Not written as rules: 6 recommendation(s) to investigate, never allowed (egresslens recommend show ID for the evidence):
#   f66ab598bd [high] Compromised source 10.244.3.17: isolate it
#   ea67e2b1cd [high] DNS tunnelling under t.exfil-example.net
#   2bebbdd2cd [high] Do not allow 'update.malware-cdn-example.com' (HTTPS:443) from subnet-10.244.1.0-10.244.6.255
#   778aa83be3 [high] Do not allow 'beacon.botnet-example.net' (HTTP:80) from subnet-10.244.1.0-10.244.6.255
#   2e481f047d [high] Do not allow '45.137.21.9' (TCP:4444) from subnet-10.244.1.0-10.244.6.255
#   152c514ab6 [high] Do not allow '185.220.101.47' (TCP:4444) from subnet-10.244.1.0-10.244.6.255

variable "firewall_policy_id" {
  type = string
}

resource "azurerm_firewall_policy_rule_collection_group" "egresslens_proposed" {
  name               = "egresslens-proposed"
  firewall_policy_id = var.firewall_policy_id
  priority           = 400
  application_rule_collection {
    name     = "allow-app-subnet-10.240.0.0-24-subnet-10.241.0.0-24"
    priority = 100
    action   = "Allow"
    rule {
      name             = "allow-ubuntu-mirrors"
      source_addresses = ["10.240.0.0/24", "10.241.0.0/24"]
      protocols {
        type = "Http"
        port = 80
      }
      destination_fqdns = ["archive.ubuntu.com", "azure.archive.ubuntu.com", "changelogs.ubuntu.com", "esm.ubuntu.com", "security.ubuntu.com", "snapshot.ubuntu.com"]
    }
  }
  application_rule_collection {
    name     = "allow-app-subnet-10.241.0.0-24"
    priority = 200
    action   = "Allow"
    rule {
      name             = "allow-packages.microsoft.com"
      source_addresses = ["10.241.0.0/24"]
      protocols {
        type = "Https"
        port = 443
      }
      destination_fqdns = ["packages.microsoft.com"]
    }
  }
  application_rule_collection {
    name     = "allow-app-subnet-10.244.1.0-10.244.6.255"
    priority = 300
    action   = "Allow"
    rule {
      name             = "allow-telemetry.example-saas.io-and-6-more"
      source_addresses = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/28", "10.244.3.16/32", "10.244.3.18/31", "10.244.3.20/30", "10.244.3.24/29", "10.244.3.32/27", "10.244.3.64/26", "10.244.3.128/25", "10.244.4.0/23", "10.244.6.0/24"]
      protocols {
        type = "Https"
        port = 443
      }
      destination_fqdns = ["*.telemetry.example-saas.io", "api.shipping-example.com", "api.tax-rates-example.com", "hooks.chat-example.io", "stcatalogimgweu.blob.core.windows.net", "stcheckoutweu01.blob.core.windows.net", "storderexports7.blob.core.windows.net"]
    }
    rule {
      name             = "allow-docker-hub"
      source_addresses = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/28", "10.244.3.16/32", "10.244.3.18/31", "10.244.3.20/30", "10.244.3.24/29", "10.244.3.32/27", "10.244.3.64/26", "10.244.3.128/25", "10.244.4.0/23", "10.244.6.0/24"]
      protocols {
        type = "Https"
        port = 443
      }
      destination_fqdns = ["auth.docker.io", "docker.io", "production.cloudflare.docker.com", "registry-1.docker.io"]
    }
    rule {
      name             = "allow-ghcr"
      source_addresses = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/28", "10.244.3.16/32", "10.244.3.18/31", "10.244.3.20/30", "10.244.3.24/29", "10.244.3.32/27", "10.244.3.64/26", "10.244.3.128/25", "10.244.4.0/23", "10.244.6.0/24"]
      protocols {
        type = "Https"
        port = 443
      }
      destination_fqdns = ["ghcr.io", "pkg-containers.githubusercontent.com"]
    }
    rule {
      name             = "allow-azure-monitor"
      source_addresses = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/28", "10.244.3.16/32", "10.244.3.18/31", "10.244.3.20/30", "10.244.3.24/29", "10.244.3.32/27", "10.244.3.64/26", "10.244.3.128/25", "10.244.4.0/23", "10.244.6.0/24"]
      protocols {
        type = "Https"
        port = 443
      }
      destination_fqdns = ["*.in.applicationinsights.azure.com", "*.ingest.monitor.azure.com", "*.metrics.ingest.monitor.azure.com", "*.monitoring.azure.com", "*.ods.opinsights.azure.com", "*.oms.opinsights.azure.com", "dc.services.visualstudio.com", "global.handler.control.monitor.azure.com"]
    }
    rule {
      name             = "allow-debian-mirrors"
      source_addresses = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/28", "10.244.3.16/32", "10.244.3.18/31", "10.244.3.20/30", "10.244.3.24/29", "10.244.3.32/27", "10.244.3.64/26", "10.244.3.128/25", "10.244.4.0/23", "10.244.6.0/24"]
      protocols {
        type = "Http"
        port = 80
      }
      destination_fqdns = ["deb.debian.org", "security.debian.org"]
    }
  }
  network_rule_collection {
    name     = "allow-net-subnet-10.240.0.0-24"
    priority = 400
    action   = "Allow"
    # needs DNS proxy on the firewall (a policy's DNS settings, a classic firewall's additionalProperties) with requireProxyForNetworkRules, and its clients using the firewall as DNS server: a network rule's FQDNs are resolved by the proxy
    rule {
      name              = "allow-udp-123-ntp.ubuntu.com"
      source_addresses  = ["10.240.0.0/24"]
      protocols         = ["UDP"]
      destination_fqdns = ["ntp.ubuntu.com"]
      destination_ports = ["123"]
    }
  }
  network_rule_collection {
    name     = "allow-net-subnet-10.241.0.0-24"
    priority = 500
    action   = "Allow"
    rule {
      name                  = "allow-icmp-1.1.1.1"
      source_addresses      = ["10.241.0.0/24"]
      protocols             = ["ICMP"]
      destination_addresses = ["1.1.1.1"]
      destination_ports     = ["*"]
    }
  }
  network_rule_collection {
    name     = "allow-net-subnet-10.244.1.0-10.244.6.255"
    priority = 600
    action   = "Allow"
    # needs DNS proxy on the firewall (a policy's DNS settings, a classic firewall's additionalProperties) with requireProxyForNetworkRules, and its clients using the firewall as DNS server: a network rule's FQDNs are resolved by the proxy
    rule {
      name              = "allow-tcp-5432-orders-db.pg-example-hosting.net"
      source_addresses  = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/28", "10.244.3.16/32", "10.244.3.18/31", "10.244.3.20/30", "10.244.3.24/29", "10.244.3.32/27", "10.244.3.64/26", "10.244.3.128/25", "10.244.4.0/23", "10.244.6.0/24"]
      protocols         = ["TCP"]
      destination_fqdns = ["orders-db.pg-example-hosting.net"]
      destination_ports = ["5432"]
    }
  }
}

resource "azurerm_firewall_policy_rule_collection_group" "app_egress_narrow" {
  name               = "app-egress-narrow"
  firewall_policy_id = var.firewall_policy_id
  priority           = 299
  depends_on         = [azurerm_firewall_policy_rule_collection_group.egresslens_proposed]
  application_rule_collection {
    name     = "workload-apps-narrow"
    priority = 200
    action   = "Allow"
    rule {
      name             = "allow-payments-api-narrow"
      source_addresses = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/28", "10.244.3.16/32", "10.244.3.18/31", "10.244.3.20/30", "10.244.3.24/29", "10.244.3.32/27", "10.244.3.64/26", "10.244.3.128/25", "10.244.4.0/23", "10.244.6.0/24"]
      protocols {
        type = "Https"
        port = 443
      }
      destination_fqdns = ["api.payments-example.com"]
    }
    rule {
      name             = "allow-api-github-narrow"
      source_addresses = ["10.241.0.0/24", "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/28", "10.244.3.16/32", "10.244.3.18/31", "10.244.3.20/30", "10.244.3.24/29", "10.244.3.32/27", "10.244.3.64/26", "10.244.3.128/25", "10.244.4.0/23", "10.244.6.0/24"]
      protocols {
        type = "Https"
        port = 443
      }
      destination_fqdns = ["api.github.com"]
    }
    rule {
      name             = "allow-github-wildcard-narrow"
      source_addresses = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/28", "10.244.3.16/32", "10.244.3.18/31", "10.244.3.20/30", "10.244.3.24/29", "10.244.3.32/27", "10.244.3.64/26", "10.244.3.128/25", "10.244.4.0/23", "10.244.6.0/24"]
      protocols {
        type = "Https"
        port = 443
      }
      destination_fqdns = ["codeload.github.com", "uploads.github.com"]
    }
  }
}

resource "azurerm_firewall_policy_rule_collection_group" "aks_egress_narrow" {
  name               = "aks-egress-narrow"
  firewall_policy_id = var.firewall_policy_id
  priority           = 199
  depends_on         = [azurerm_firewall_policy_rule_collection_group.app_egress_narrow]
  network_rule_collection {
    name     = "aksfwnr-narrow"
    priority = 100
    action   = "Allow"
    rule {
      name                  = "allow-icmp-hub-narrow"
      source_addresses      = ["10.240.0.0/22", "10.241.0.0/24"]
      protocols             = ["ICMP"]
      destination_addresses = ["10.0.1.4"]
      destination_ports     = ["*"]
    }
  }
}

# remove-rule: app-egress/workload-apps/allow-legacy-ftp-mirror: delete the rule block from its resource after disabling it for 30 days
# remove-rule: app-egress/legacy-network/allow-smtp-relay: delete the rule block from its resource after disabling it for 30 days
