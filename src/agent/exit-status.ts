/**
 * The exit status (sysexits' EX_CONFIG) of an agent that must not be started again until a person acts:
 * its node was removed from the cluster, or the cluster's stored format is newer than this agent. The
 * systemd unit names it in RestartPreventExitStatus, so such an agent is not restarted in a loop.
 */
export const EXIT_NEEDS_OPERATOR = 78;
