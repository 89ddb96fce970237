/** The CLI's way to this node's agent: its unix socket, with an error that says what to do. */
import { userInfo } from 'node:os';
import { agentPaths } from '../agent/agent.ts';
import { type AgentRequest, callAgent } from '../agent/api.ts';
import { UserError } from '../lib/errors.ts';
import { stateDir } from '../lib/paths.ts';

export async function askAgent(req: AgentRequest, timeoutMs?: number): Promise<unknown> {
  const socket = agentPaths(stateDir()).socket;
  try {
    return await callAgent(socket, req, timeoutMs);
  } catch (err) {
    if (err instanceof UserError && err.message.startsWith('cannot reach'))
      throw new UserError(
        `${err.message} — is this node's agent running? (cvserver agent --config cluster.yaml; in the lab: cvserver lab exec NODE -- cvserver ${process.argv.slice(2).join(' ') || req.op})`,
      );
    throw err;
  }
}

/** Who runs this command, for the cluster's log (the user behind sudo if any). */
export function operatorName(): string {
  const name = process.env.SUDO_USER || userInfo().username;
  return name.slice(0, 64);
}
