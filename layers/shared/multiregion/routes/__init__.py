"""One Powertools Router per API domain; function handlers include the ones they serve."""
