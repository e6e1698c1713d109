/**
 * Server errors turned into per-node marks for display: validation errors
 * from a 400 on POST /prompt and execution errors from the websocket.
 */

/**
 * From a 400 body `{error, node_errors}` build
 * `{message, nodes: {id: {messages: [...], inputs: [names]}}}`.
 */
export function marksFromPromptError(body) {
  const nodes = {};
  for (const [id, entry] of Object.entries(body?.node_errors ?? {})) {
    const messages = [];
    const inputs = [];
    for (const err of entry.errors ?? []) {
      const name = err.extra_info?.input_name;
      messages.push(err.details ? `${err.message}: ${err.details}` : err.message);
      if (name && !inputs.includes(name)) inputs.push(name);
    }
    nodes[String(id)] = { messages, inputs, classType: entry.class_type };
  }
  const e = body?.error;
  const message = typeof e === 'string' ? e :
    e ? (e.details ? `${e.message}: ${e.details}` : e.message) : 'Prompt rejected';
  return { message, nodes };
}

/** From an `execution_error` websocket message, marks for its node. */
export function marksFromExecutionError(data) {
  const id = String(data.node_id);
  const message = `${data.exception_type ?? 'Error'}: ${data.exception_message ?? ''}`.trim();
  return { message, nodes: { [id]: { messages: [message], inputs: [], classType: data.node_type } } };
}
