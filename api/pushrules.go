package api

import (
	"encoding/json"
	"fmt"
	"net/http"

	"maunium.net/go/mautrix/id"
)

// pushRuleRoutes registers the read side of the push rules API. Every user
// has the spec's server-default rules; clients read them before their
// first /sync (matrix-js-sdk and Element wait for them). Changing rules,
// and pushers, are not served yet.
func (s *Server) pushRuleRoutes() {
	s.handle("GET", "/pushrules/", s.authed(s.getPushRules))
	s.handle("GET", "/pushrules/global/", s.authed(s.getPushRuleset))
	s.handle("GET", "/pushrules/global/{kind}/{ruleId}", s.authed(s.getPushRule))
	s.handle("GET", "/pushrules/global/{kind}/{ruleId}/{attr}", s.authed(s.getPushRule))
}

func (s *Server) getPushRules(_ *http.Request, sess *session) (any, error) {
	return map[string]any{"global": defaultPushRules(sess.user)}, nil
}

func (s *Server) getPushRuleset(_ *http.Request, sess *session) (any, error) {
	return defaultPushRules(sess.user), nil
}

// getPushRule answers one rule, or its enabled flag or actions.
func (s *Server) getPushRule(r *http.Request, sess *session) (any, error) {
	rules, ok := defaultPushRules(sess.user).kind(r.PathValue("kind"))
	if !ok {
		return nil, invalidParam("Unknown push rule kind.")
	}
	var rule map[string]any
	for _, x := range rules {
		if x["rule_id"] == r.PathValue("ruleId") {
			rule = x
		}
	}
	if rule == nil {
		return nil, notFound("No such push rule.")
	}
	switch attr := r.PathValue("attr"); attr {
	case "":
		return rule, nil
	case "enabled", "actions":
		return map[string]any{attr: rule[attr]}, nil
	default:
		return nil, errUnrecognized
	}
}

// pushRuleset is a user's push rules by kind, in the order they apply.
type pushRuleset struct {
	Override  []map[string]any `json:"override"`
	Content   []map[string]any `json:"content"`
	Room      []map[string]any `json:"room"`
	Sender    []map[string]any `json:"sender"`
	Underride []map[string]any `json:"underride"`
}

func (p *pushRuleset) kind(k string) ([]map[string]any, bool) {
	switch k {
	case "override":
		return p.Override, true
	case "content":
		return p.Content, true
	case "room":
		return p.Room, true
	case "sender":
		return p.Sender, true
	case "underride":
		return p.Underride, true
	}
	return nil, false
}

// defaultPushRules is the spec's predefined rules (v1.18, "Predefined
// Rules") for user.
func defaultPushRules(user id.UserID) *pushRuleset {
	quote := func(s string) []byte { b, _ := json.Marshal(s); return b }
	var p pushRuleset
	if err := json.Unmarshal(fmt.Appendf(nil, predefinedPushRules, quote(string(user)), quote(string(user)), quote(user.Localpart())), &p); err != nil {
		panic("api: the predefined push rules do not parse: " + err.Error())
	}
	p.Room, p.Sender = []map[string]any{}, []map[string]any{}
	return &p
}

// predefinedPushRules takes the user ID twice, then its localpart, each a
// JSON string.
const predefinedPushRules = `{
"override": [
 {"rule_id": ".m.rule.master", "default": true, "enabled": false, "conditions": [], "actions": []},
 {"rule_id": ".m.rule.suppress_notices", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}], "actions": []},
 {"rule_id": ".m.rule.invite_for_me", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.member"},
   {"kind": "event_match", "key": "content.membership", "pattern": "invite"},
   {"kind": "event_match", "key": "state_key", "pattern": %s}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
 {"rule_id": ".m.rule.member_event", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.member"}], "actions": []},
 {"rule_id": ".m.rule.is_user_mention", "default": true, "enabled": true,
  "conditions": [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": %s}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
  "conditions": [{"kind": "contains_display_name"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.is_room_mention", "default": true, "enabled": true,
  "conditions": [{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true},
   {"kind": "sender_notification_permission", "key": "room"}],
  "actions": ["notify", {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "@room"},
   {"kind": "sender_notification_permission", "key": "room"}],
  "actions": ["notify", {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.tombstone", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
   {"kind": "event_match", "key": "state_key", "pattern": ""}],
  "actions": ["notify", {"set_tweak": "highlight"}]},
 {"rule_id": ".m.rule.reaction", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.reaction"}], "actions": []},
 {"rule_id": ".m.rule.room.server_acl", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"},
   {"kind": "event_match", "key": "state_key", "pattern": ""}], "actions": []},
 {"rule_id": ".m.rule.suppress_edits", "default": true, "enabled": true,
  "conditions": [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}], "actions": []}
],
"content": [
 {"rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true, "pattern": %s,
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]}
],
"underride": [
 {"rule_id": ".m.rule.call", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.call.invite"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]},
 {"rule_id": ".m.rule.encrypted_room_one_to_one", "default": true, "enabled": true,
  "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
 {"rule_id": ".m.rule.room_one_to_one", "default": true, "enabled": true,
  "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
 {"rule_id": ".m.rule.message", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}], "actions": ["notify"]},
 {"rule_id": ".m.rule.encrypted", "default": true, "enabled": true,
  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}], "actions": ["notify"]}
]
}`
