"""Identity and residency: the Cognito triggers that give each user one home region (from
the country they declare, through the residency policy), record it in the residency
registry, and refuse sign-up, sign-in and tokens anywhere else."""
