"""Site classifications shared by the inventory and its sections."""

from typing import Literal

Tier = Literal["province", "district", "commune", "unit"]
# vnpt: the telecom-provisioned 3-tier links; contract: sites added under a rental contract
Provision = Literal["vnpt", "contract"]
